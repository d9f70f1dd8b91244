//! Anycast announcement of the proxy's address (OSPFv2, BGP, BFD). Empty until the routing
//! issues land: `pgcast status` reports "none configured" for this section.
