"""`installed_tensorflow`: the pip-installed TensorFlow's headers and framework library."""

_BUILD = """
cc_library(
    name = "tensorflow",
    hdrs = glob(["include/**"]),
    includes = ["include"],
    srcs = ["{library}"],
    defines = {defines},
    visibility = ["//visibility:public"],
)
"""

_SCRIPT = """
import os, tensorflow as tf
print(tf.sysconfig.get_include())
print(tf.sysconfig.get_lib())
print(' '.join(f for f in tf.sysconfig.get_compile_flags() if f.startswith('-D')))
"""

def _installed_tensorflow_impl(ctx):
    root = ctx.path(Label("//:WORKSPACE")).dirname
    python = ctx.os.environ.get("PYTHON_BIN_PATH", str(root) + "/.venv/bin/python")
    result = ctx.execute([python, "-c", _SCRIPT], environment = {"TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.return_code:
        fail("cannot import tensorflow with %s (set PYTHON_BIN_PATH): %s" % (python, result.stderr))
    include, library_dir, defines = result.stdout.strip().split("\n")[-3:]
    ctx.symlink(include, "include")
    ctx.symlink(library_dir + "/libtensorflow_framework.so.2", "libtensorflow_framework.so.2")
    ctx.file("BUILD", _BUILD.format(
        library = "libtensorflow_framework.so.2",
        defines = repr([flag[2:] for flag in defines.split(" ") if flag]),
    ))

installed_tensorflow = repository_rule(
    implementation = _installed_tensorflow_impl,
    environ = ["PYTHON_BIN_PATH"],
    local = True,
)
