"""Face data: decoding, ingest (CSV / UTKFace folder), splitting, Parquet preparation and loading."""
