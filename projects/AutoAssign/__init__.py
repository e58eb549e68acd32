"""AutoAssign project folder (package: ``autoassign``)."""
