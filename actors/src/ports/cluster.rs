//! The queue's side of a cluster, [`ClusterPort`]: several relays sharing one durable store.
//!
//! With a port, the queue holds deliveries only for the devices connected to this relay, reads a
//! device's backlog from the store when it connects, and hands every delivery for a device that
//! is not connected here to [`ClusterPort::published`], which wakes the relay that holds it. The
//! binary implements it over Redis (`src/cluster.rs`); without one there is one relay and the
//! queue holds every device's deliveries.

use std::future::Future;
use std::pin::Pin;

use crate::model::DeviceId;

/// A future the queue awaits off its own thread.
pub type ClusterFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Deliveries by device: the store sequence numbers of notifications committed for it.
pub type Deliveries = Vec<(DeviceId, Vec<i64>)>;

/// What the queue tells the other relays of a cluster.
pub trait ClusterPort: Send + Sync + 'static {
    /// `device` connected here. The future ends once the other relays route its deliveries here
    /// (or that failed and was logged): the queue reads the device's backlog only then, so that a
    /// notification committed elsewhere is either in that read or woken here.
    fn online(&self, device: &DeviceId) -> ClusterFuture;
    /// `device`'s last socket here closed.
    fn offline(&self, device: &DeviceId);
    /// Notifications were committed for devices not connected here.
    fn published(&self, deliveries: Deliveries);
}
