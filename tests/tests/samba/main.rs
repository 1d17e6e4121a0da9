//! The LDAPS backend against real Active Directory domain controllers
//! (Samba 4), started by `scripts/samba/up`. These tests need root and two
//! throwaway DCs, so plain `cargo test` lists them as ignored with the way
//! to run them; `scripts/test` (and CI) runs them, and there they fail —
//! never skip — when the DCs are unreachable.

//!
//! Each module owns its own fixtures (OUs, users, policies it creates under
//! names of its own), so the modules do not depend on each other's state.

mod basics;
mod controllers;
mod dc;
mod doctor;
mod eligibility;
mod identity;
mod kerberos;
mod lab;
mod policy;
mod rights;
mod scenarios;
