//! Host liveness and domain events. Arrives with the impact-analysis work.
