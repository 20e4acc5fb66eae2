//! Run state: the append-only event log of each run, and its lock.
