"""Tables: Arrow/Parquet I/O, schema validation, fingerprints, the output guard and lock, SQL, iteration folders."""
