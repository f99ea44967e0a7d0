"""The alignment: the artifact (U per site, how it was found) and :func:`~orthoxfer.alignment.align.align`, which makes one."""
