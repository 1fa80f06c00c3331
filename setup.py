"""The compiled parts: the ingest consumer's per-batch kernel
(``services/ingest/domain/_native.c``) and whole Kafka record batches (``shared/_records.c``).

Everything else is in ``pyproject.toml``. The extensions are optional: where no C compiler is
found the install goes on, and ``services.ingest.domain.kernel`` and ``shared.kafka`` use their
Python paths."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.ingest.domain._native",
            ["services/ingest/domain/_native.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "shared._records",
            ["shared/_records.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)
