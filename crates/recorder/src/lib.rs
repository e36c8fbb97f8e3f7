//! profrec's library.
