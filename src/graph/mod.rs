//! Compile a checked plan into a DAG of steps.
