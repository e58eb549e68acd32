"""OneNet project folder (package: ``onenet``)."""
