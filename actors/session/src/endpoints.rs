//! Settings chosen per endpoint — a bot (`aibot` and its bot id) or an app (`app` and its
//! AgentID) — with a box-wide default: the persona that answers ([`crate::Personas`]) and
//! the generator that generates ([`crate::Generators`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::reply::Origin;

/// A value for every endpoint: the default, and the endpoints' own.
#[derive(Debug)]
pub struct ByEndpoint<T: ?Sized> {
    default: Arc<T>,
    endpoints: HashMap<(String, String), Arc<T>>,
}

impl<T: ?Sized> Clone for ByEndpoint<T> {
    fn clone(&self) -> Self {
        Self {
            default: self.default.clone(),
            endpoints: self.endpoints.clone(),
        }
    }
}

impl<T: Default> Default for ByEndpoint<T> {
    fn default() -> Self {
        Self::new(Arc::new(T::default()))
    }
}

impl<T: ?Sized> ByEndpoint<T> {
    /// Every endpoint uses `default`.
    pub fn new(default: Arc<T>) -> Self {
        Self {
            default,
            endpoints: HashMap::new(),
        }
    }

    /// The endpoint `(channel, endpoint)` (`aibot` and the bot id, `app` and the AgentID)
    /// uses `v`.
    pub fn with(mut self, channel: &str, endpoint: &str, v: Arc<T>) -> Self {
        self.endpoints
            .insert((channel.to_string(), endpoint.to_string()), v);
        self
    }

    /// The value of `(channel, endpoint)`.
    pub fn get(&self, channel: &str, endpoint: &str) -> Arc<T> {
        self.endpoints
            .get(&(channel.to_string(), endpoint.to_string()))
            .unwrap_or(&self.default)
            .clone()
    }

    /// The value for the endpoint a message came through.
    pub fn for_origin(&self, o: &Origin) -> Arc<T> {
        self.get(&o.channel, &o.endpoint)
    }

    /// The default.
    pub fn default_value(&self) -> Arc<T> {
        self.default.clone()
    }
}
