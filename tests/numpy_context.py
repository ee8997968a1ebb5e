"""NumPy GC / SNL / NL / SE written straight from `docs/global_context.md`,
independent of `keras_relnet.ops` (float64, explicit formulas)."""

import numpy as np


def softmax(logits, axis=-1):
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_transform(context, weights, transform):
    if transform == "linear":
        kernel, bias = weights
        return context @ kernel + bias
    kernel1, bias1, gamma, beta, kernel2, bias2 = weights
    hidden = context @ kernel1 + bias1
    mean, var = hidden.mean(-1, keepdims=True), hidden.var(-1, keepdims=True)
    hidden = np.maximum((hidden - mean) / np.sqrt(var + 1e-5) * gamma + beta, 0)
    return hidden @ kernel2 + bias2


def numpy_global_context(x, pooling_weights, transforms, pooling, transform):
    x = np.asarray(x, np.float64)
    batch, height, width, channels = x.shape
    flat = x.reshape(batch, height * width, channels)
    if pooling == "attention":
        kernel, bias = pooling_weights
        alpha = softmax((flat @ kernel + bias)[..., 0], axis=1)           # [B, L]
        context = np.einsum("bl,blc->bc", alpha, flat)
    else:
        context = flat.mean(axis=1)
    out = x
    if "multiply" in transforms:
        out = out * sigmoid(numpy_transform(context, transforms["multiply"], transform))[:, None, None]
    if "add" in transforms:
        out = out + numpy_transform(context, transforms["add"], transform)[:, None, None]
    return out


def numpy_squeeze_excitation(x, kernel1, bias1, kernel2, bias2):
    x = np.asarray(x, np.float64)
    gate = sigmoid(np.maximum(x.mean(axis=(1, 2)) @ kernel1 + bias1, 0) @ kernel2 + bias2)
    return x * gate[:, None, None]


def max_pool_2x2(t):
    batch, height, width, channels = t.shape
    t = t[:, : height // 2 * 2, : width // 2 * 2]
    return t.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def numpy_non_local(x, theta, phi, g, output, mode, sub_sample, use_scale, concat=None):
    """theta/phi/g/output: (kernel, bias) pairs (theta/phi None in gaussian mode)."""
    x = np.asarray(x, np.float64)
    batch, height, width, channels = x.shape
    project = lambda weights: x @ weights[0] + weights[1]
    pool = max_pool_2x2 if sub_sample else (lambda t: t)
    if mode == "gaussian":
        queries, keys = x, pool(x)
    else:
        queries, keys = project(theta), pool(project(phi))
    values = pool(project(g))
    queries = queries.reshape(batch, height * width, -1)
    keys = keys.reshape(batch, -1, keys.shape[-1])
    values = values.reshape(batch, -1, values.shape[-1])
    count = keys.shape[1]
    if mode == "concatenation":
        inner = queries.shape[-1]
        f = np.maximum((queries @ concat[:inner])[:, :, None] + (keys @ concat[inner:])[:, None, :], 0) / count
    else:
        logits = np.einsum("bic,bjc->bij", queries, keys)
        if mode == "dot_product":
            f = logits / count
        elif mode == "embedded_gaussian" and use_scale:
            f = softmax(logits / np.sqrt(queries.shape[-1]))
        else:
            f = softmax(logits)
    y = (f @ values).reshape(batch, height, width, -1)
    return x + y @ output[0] + output[1]
