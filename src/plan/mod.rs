//! Planning: turns a source tree into a deploy plan (runtime detection, generated Dockerfiles).
