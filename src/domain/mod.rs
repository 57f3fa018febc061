//! Small types that several layers share, kept below all of them so that no module has to import
//! a module above it: client addresses ([`net`]), rate-limit rules ([`ratelimit`]), log level
//! names ([`log_level`]), API token scopes ([`scope`]), delivery states ([`delivery`]) and
//! identifiers ([`ids`]). Nothing here does I/O or reads another
//! module of this crate.

pub mod delivery;
pub mod ids;
pub mod log_level;
pub mod net;
pub mod ratelimit;
pub mod scope;

pub use delivery::DeliveryStatus;
pub use ids::{AdminId, ApiTokenId, Jti, SessionId};
pub use scope::Scope;
