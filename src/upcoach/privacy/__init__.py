"""Privacy rules: special-category data (GDPR art. 9), residency, retention, data-subject rights."""
