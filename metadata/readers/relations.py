"""Portal relation names -> DataCite relation types, without turning one into another.

The portal uses its own names (``isChildOf``, ``isParentOf``, ``isSiblingOf``,
``isRelatedTo``, ``isProducedBy``, ``isPartOf``); DataCite (and so InvenioRDM and Zenodo)
has none of the first five. "Child" means two different things on the portal: a dataset
derived from another (CMS NanoAOD from MiniAOD, an event-display file from an AOD: the
record says "derived from" / "processed from", or its type is ``Derived``), or a member
of a collection (DELPHI yearly samples, ATLAS "for citing all the data of this release").
A derived dataset is not "part of" its parent, so the wording and the record's type
decide. The source's own name is kept on every ``Relation`` (``source_type``) and shown
by the profiles, so nothing is re-labelled silently.
"""

from __future__ import annotations

import re

_DERIVED_WORDS = re.compile(r"\b(deriv\w*|process\w*|produc\w*|skim\w*|reprocess\w*)\b", re.IGNORECASE)
_COLLECTION_WORDS = re.compile(r"\b(part of|for citing all|can be found)\b", re.IGNORECASE)

# The relation when the wording says nothing more.
_DEFAULTS = {
    "ispartof": "ispartof",
    "haspart": "haspart",
    "isparentof": "haspart",
    "ischildof": "ispartof",
    "issiblingof": "isvariantformof",  # "the corresponding AOD dataset": the same events, another form
    "isrelatedto": "references",  # DataCite has no generic "related": the weakest link it has
    "isproducedby": "iscompiledby",  # "the code to produce the files": B was used to create A
    "isderivedfrom": "isderivedfrom",
    "issourceof": "issourceof",
    "isidenticalto": "isidenticalto",
    "isversionof": "isversionof",
    "isnewversionof": "isnewversionof",
    "ispreviousversionof": "ispreviousversionof",
    "isdocumentedby": "isdocumentedby",
    "documents": "documents",
    "references": "references",
    "isreferencedby": "isreferencedby",
}


def datacite_relation(source_type: str, *, description: str | None, record_is_derived: bool) -> str:
    """The DataCite relation (InvenioRDM id, lowercase) for a portal relation name."""
    key = source_type.replace("_", "").replace(" ", "").casefold()
    wording = description or ""
    collection = bool(_COLLECTION_WORDS.search(wording))
    derived = bool(_DERIVED_WORDS.search(wording)) or record_is_derived
    if key == "ischildof" and derived and not collection:
        return "isderivedfrom"
    if key == "isparentof" and _DERIVED_WORDS.search(wording) and not collection:
        return "issourceof"
    return _DEFAULTS.get(key, "references")


# InvenioRDM ids -> the camelCase names Zenodo's legacy deposit API expects.
ZENODO_NAMES = {
    "iscitedby": "isCitedBy",
    "cites": "cites",
    "issupplementto": "isSupplementTo",
    "issupplementedby": "isSupplementedBy",
    "iscontinuedby": "isContinuedBy",
    "continues": "continues",
    "isdescribedby": "isDescribedBy",
    "describes": "describes",
    "hasmetadata": "hasMetadata",
    "ismetadatafor": "isMetadataFor",
    "hasversion": "hasVersion",
    "isversionof": "isVersionOf",
    "isnewversionof": "isNewVersionOf",
    "ispreviousversionof": "isPreviousVersionOf",
    "ispartof": "isPartOf",
    "haspart": "hasPart",
    "ispublishedin": "isPublishedIn",
    "isreferencedby": "isReferencedBy",
    "references": "references",
    "isdocumentedby": "isDocumentedBy",
    "documents": "documents",
    "iscompiledby": "isCompiledBy",
    "compiles": "compiles",
    "isvariantformof": "isVariantFormOf",
    "isoriginalformof": "isOriginalFormOf",
    "isidenticalto": "isIdenticalTo",
    "isreviewedby": "isReviewedBy",
    "reviews": "reviews",
    "isderivedfrom": "isDerivedFrom",
    "issourceof": "isSourceOf",
    "isrequiredby": "isRequiredBy",
    "requires": "requires",
    "isobsoletedby": "isObsoletedBy",
    "obsoletes": "obsoletes",
}
