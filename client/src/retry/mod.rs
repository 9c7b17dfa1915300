//! retry helpers (filled in by the retry/fallback/layer engineer).
