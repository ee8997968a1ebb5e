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


class OptionsAttributes:
    """Mixin of the layer fronts: the options read as attributes (`layer.kernel_size`).

    Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Example(FamilyOptions):
    ...     size: int = 3
    >>> class Front(OptionsAttributes):
    ...     options = Example()
    >>> Front().size
    3
    """

    def __getattr__(self, name):
        options = type(self).__dict__.get("options", self.__dict__.get("options"))
        if options is not None and name in type(options).field_names():
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
