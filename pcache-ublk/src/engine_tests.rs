//! Tests of the engine adapter over in-memory media and backing.
