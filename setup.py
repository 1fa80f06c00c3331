"""The compiled part: the ingest consumer's per-batch kernel (``services/ingest/domain/_native.c``),
the one home of the quality checks. It needs a C compiler and the BLAKE2 reference library
(Debian's ``gcc`` and ``libb2-dev``, which ``make setup`` installs).

Everything else is in ``pyproject.toml``."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.ingest.domain._native",
            ["services/ingest/domain/_native.c"],
            libraries=["b2"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ]
)
