//! Child.
