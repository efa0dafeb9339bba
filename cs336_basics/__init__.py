"""cs336_basics: a from-scratch language-model stack."""
