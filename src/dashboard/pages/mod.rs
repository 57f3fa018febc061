//! One module per dashboard section; each handler calls the API's own operation
//! (`crate::api::routes::…`) with the admin's session and renders what it returns.

pub mod audit;
pub mod devices;
pub mod keys;
pub mod live;
pub mod overview;
pub mod pairing;
pub mod session;
pub mod system;
pub mod tokens;
