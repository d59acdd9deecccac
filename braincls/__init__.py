"""braincls: brain MRI tumor / no-tumor classification pipeline (research use only)."""

__version__ = "0.1.0"
