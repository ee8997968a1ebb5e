"""What an exported graph is made of: operator counts and XNNPACK delegation."""

import collections
import pathlib
from typing import NamedTuple


class Delegation(NamedTuple):
    """How LiteRT's default XNNPACK delegate takes a TFLite model.

    Attributes:
        operators: `Counter` of every operator of the flatbuffer, by name.
        partitions: the number of XNNPACK partitions (delegate nodes).
        outside: `Counter` of the operators the delegate does not run (they
            run on LiteRT's own single-threaded kernels, between partitions).
    """

    operators: collections.Counter
    partitions: int
    outside: collections.Counter


def tflite_delegation(path):
    """Operator counts of a `.tflite` file and how XNNPACK partitions them.

    The interpreter lists the delegate's partitions and the nodes left
    outside them; a node is inside when a partition's outputs depend on it
    without crossing the partition's inputs.

    Args:
        path: a `.tflite` file.

    Returns:
        A `Delegation`.

    Example:
    >>> import keras
    >>> from keras_relnet.export import export
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> stats = tflite_delegation(export(model, "/tmp/d.tflite", overwrite=True))
    >>> stats.partitions, dict(stats.outside)
    (1, {})
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(pathlib.Path(path)))
    interpreter.allocate_tensors()
    nodes = interpreter._get_ops_details()  # the only listing of delegate nodes
    plain = [node for node in nodes if node["op_name"] != "DELEGATE"]
    producer = {tensor: node["index"] for node in plain for tensor in node["outputs"]}
    by_index = {node["index"]: node for node in plain}
    inside = set()
    partitions = [node for node in nodes if node["op_name"] == "DELEGATE"]
    for partition in partitions:
        boundary = {int(tensor) for tensor in partition["inputs"]}
        stack = [producer[t] for t in partition["outputs"] if t in producer]
        while stack:
            index = stack.pop()
            if index in inside:
                continue
            inside.add(index)
            stack.extend(producer[t] for t in by_index[index]["inputs"]
                         if t >= 0 and t not in boundary and t in producer)
    return Delegation(collections.Counter(node["op_name"] for node in plain), len(partitions),
                      collections.Counter(node["op_name"] for node in plain
                                          if node["index"] not in inside))


def onnx_operator_counts(path):
    """`Counter` of the node types of an `.onnx` file's graph.

    Example:
    >>> import keras
    >>> from keras_relnet.export import export
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> sum(onnx_operator_counts(export(model, "/tmp/d.onnx", overwrite=True)).values()) > 0
    True
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return collections.Counter(node.op_type for node in graph.node)
