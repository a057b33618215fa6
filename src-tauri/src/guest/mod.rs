//! Builds what a guest reads (NoCloud seed disk, app payload disk). Arrives with the lab issue.
