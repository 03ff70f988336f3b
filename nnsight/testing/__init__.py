"""Test helpers: small real models built or converted offline, loadable by path."""
