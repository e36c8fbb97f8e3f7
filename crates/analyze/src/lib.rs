//! profanalyze's library.
