//! Source: git repositories through git2 (mirrors, fetch, refs, tree export) and webhook verification.
