//! Run the step graph: walker, retries, rate limits, polling. Knows nothing of AWS.
