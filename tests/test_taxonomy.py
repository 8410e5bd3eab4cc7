from emopillars_jax import taxonomy as tx


def test_label_order_is_goemotions():
    assert len(tx.LABELS) == 28 == tx.NUM_LABELS
    assert tx.LABELS[0] == "admiration" and tx.LABELS[26] == "surprise"
    assert tx.LABEL_TO_ID["neutral"] == 27 == tx.NEUTRAL_ID
    assert list(tx.LABELS) == sorted(tx.LABELS[:-1]) + ["neutral"]
    assert set(tx.DEFINITIONS) == set(tx.LABELS)


def test_synonyms_point_into_taxonomy_and_do_not_shadow_classes():
    assert set(tx.SYNONYMS.values()) <= set(tx.LABELS)
    assert not set(tx.SYNONYMS) & set(tx.LABELS)


def test_canonical_label_is_case_and_space_tolerant():
    assert tx.canonical_label("  Joy ") == "joy"
    assert tx.canonical_label("NERVOUSNESS.") == "nervousness"
    assert tx.canonical_label("Anxiety") == "nervousness"
    assert tx.canonical_label("hope") == "optimism"
    assert tx.canonical_label("indignation") == "anger"
    assert tx.canonical_label("no_emotion") == "neutral"
    assert tx.canonical_label("**Fears**") == "fear"
    assert tx.canonical_label("flibbertigibbet") is None


def test_map_scored_labels_keeps_max_and_reports_unmapped():
    mapped = tx.map_scored_labels([("anxiety", 0.4), ("Nervousness", 0.7), ("hope", 0.2),
                                   ("zorblat", 0.9), ("Joy", "0.5")])
    assert mapped.scores == {"nervousness": 0.7, "optimism": 0.2, "joy": 0.5}
    assert mapped.unmapped == ["zorblat"]
    assert mapped.label_ids(0.3) == [tx.LABEL_TO_ID["joy"], tx.LABEL_TO_ID["nervousness"]]


def test_label_id_error_names_the_input():
    assert tx.label_id("guilt") == tx.LABEL_TO_ID["remorse"]
    try:
        tx.label_id("blorp")
    except ValueError as exc:
        assert "'blorp'" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def test_benchmark_maps():
    isear = tx.benchmark_label_map("isear")
    assert isear["shame"] == tx.LABEL_TO_ID["embarrassment"]
    assert isear["guilt"] == tx.LABEL_TO_ID["remorse"]
    assert tx.benchmark_label_map("emocontext")["others"] == tx.NEUTRAL_ID
    assert tx.multi_hot([0, 27])[0] == 1.0 and sum(tx.multi_hot([0, 27])) == 2.0


def test_prompt_label_list_has_every_label_once():
    lines = tx.prompt_label_list().splitlines()
    assert len(lines) == 28 and lines[-1].startswith("- neutral:")
