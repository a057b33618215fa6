//! Test-only package: see the `tests/` folder of this package.
