"""Ray Tune side of facetune: search spaces, the trial function and the nine-combination sweep."""
