//! ractor adapter for tether (see the actor issue).
