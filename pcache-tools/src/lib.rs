//! Shared code of the pcache command-line tools.
