"""The base of the families' option dataclasses."""

import dataclasses

import keras

_INITIALIZER = "initializer"


def initializer_field(default):
    """A dataclass field that holds an initializer (any `keras.initializers.get` identifier).

    Args:
        default: the default identifier, e.g. "glorot_uniform".

    Returns:
        A `dataclasses.field`; the options hold the resolved Keras initializer.

    Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Example(FamilyOptions):
    ...     kernel_initializer: object = initializer_field("zeros")
    >>> Example().to_config()["kernel_initializer"]["class_name"]
    'Zeros'
    """
    return dataclasses.field(default=default, metadata={_INITIALIZER: True})


@dataclasses.dataclass(frozen=True)
class FamilyOptions:
    """Options of a relation family: validated once, when made; frozen after.

    Subclasses declare typed fields and override `normalised`, which checks
    the received values and returns the ones to store (an error names the
    argument, the expected and the received value). Initializer fields
    (`initializer_field`) are resolved to Keras initializers; they work in
    tf_keras' `add_weight` too, which only calls them.
    """

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if field.metadata.get(_INITIALIZER):
                value = getattr(self, field.name)
                object.__setattr__(self, field.name, keras.initializers.get(value))
        for name, value in self.normalised().items():
            object.__setattr__(self, name, value)

    def normalised(self):
        """The checked values, by field name (fields not returned stay as received)."""
        return {}

    def to_config(self):
        """The options as a JSON-able dict: the layers' `get_config` entries.

        Returns:
            Field name to value; initializers serialised, tuples as lists.
        """
        config = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata.get(_INITIALIZER):
                value = keras.initializers.serialize(value)
            elif isinstance(value, tuple):
                value = list(value)
            config[field.name] = value
        return config

    @classmethod
    def field_names(cls):
        """The names of the options, in order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def split(cls, kwargs):
        """Splits keyword arguments into these options and the rest.

        Args:
            kwargs: a layer's keyword arguments.

        Returns:
            `(options, rest)`: the options made from the known names, and a
            dict of the other arguments (base layer arguments).
        """
        names = set(cls.field_names())
        rest = {key: value for key, value in kwargs.items() if key not in names}
        return cls(**{key: kwargs[key] for key in kwargs if key in names}), rest


class FamilyFront:
    """Mixin of the layer fronts: the options, the regulariser, attributes and config.

    A front (a Keras 3 or a tf_keras layer) calls `set_family` in `__init__`;
    the options then read as attributes (`layer.kernel_size`), and
    `get_config` is the base config plus the options and the regulariser.
    `regularizers` is the front's regularizers module.

    Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Example(FamilyOptions):
    ...     size: int = 3
    >>> class Front(FamilyFront, keras.layers.Layer):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.set_family(Example(), kernel_regularizer="l2")
    >>> Front().size, Front().get_config()["kernel_regularizer"]["class_name"]
    (3, 'L2')
    """

    regularizers = keras.regularizers

    def set_family(self, options, kernel_regularizer=None):
        """Stores the options and the (deserialised) kernel regulariser."""
        self.options = options
        self.kernel_regularizer = self.regularizers.get(kernel_regularizer)

    def __getattr__(self, name):
        options = self.__dict__.get("options")
        if options is not None and name in type(options).field_names():
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get_config(self):
        return {**super().get_config(), **self.options.to_config(),
                "kernel_regularizer": self.regularizers.serialize(self.kernel_regularizer)}
