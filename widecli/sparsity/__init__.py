"""Allocation rules (`rules`), exact-count seeded masks (`masks`) and the CSR compute backend (`csr`)."""
