"""FCOS / ATSS / VarifocalNet project folder (package: ``fcos_vfnet``)."""
