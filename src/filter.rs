//! Lambda FilterCriteria for stream events (EventBridge pattern syntax), applied to a record as
//! the `lambda` format shows it.
