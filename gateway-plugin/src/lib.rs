//! tracelake gateway plugin: the instrumentation layer (trace header,
//! sampling client, segment emitter) and the reference gateway, function
//! runtime and workflow engine whose traffic tracelake observes.
//!
//! Depends only on `tracelake-sampler` (as a client). Built in a later issue.
