//! sbx-oci: the OCI runtime front end. (This file declares only the modules of the
//! seccomp and resources branch; the lifecycle branch brings the rest.)

pub mod resources;
pub mod seccomp;
