//! Stepwise's integration tests live in `tests/it/` (one test binary); this library is
//! empty so the package can hold them.
