"""Profiles: one neutral ``Dataset`` -> one target's draft body, with its validation.

``inveniordm`` (stock InvenioRDM), ``nrp-particles`` (the NRP "particles" model) and
``zenodo`` (Zenodo's legacy deposit metadata). Registered by name in ``metadata.base``;
metadata/MAPPING.md is the field-by-field table of all three.
"""
