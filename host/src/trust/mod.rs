//! Admin API keys, until their domain joins the API's authentication.

pub mod admin_keys;
