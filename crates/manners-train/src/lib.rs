//! manners-train
