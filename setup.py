"""The compiled part: the ingest consumer's per-batch kernel (``services/ingest/domain/_native.c``).

Everything else is in ``pyproject.toml``. The extension is optional: where no C compiler is
found the install goes on, and ``services.ingest.domain.kernel`` uses its Python twin."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.ingest.domain._native",
            ["services/ingest/domain/_native.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)
