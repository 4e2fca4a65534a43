"""The `astrom3` TFDS data set: builder, per-object parsing, toy builder.

Importing `astrom3_dataset_builder` registers `astrom3/<config>` with TFDS.
It lives in the data layer so that the library never imports the
`tfds_builders` package (which only re-exports it for TFDS's conventions).
"""
