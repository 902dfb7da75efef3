//! `sbx exec`'s side of a named sandbox's control socket, which lives in the runtime
//! (`runtime::control`): the supervisor binds it and the sandbox's init answers.

pub use crate::runtime::control::connect;
