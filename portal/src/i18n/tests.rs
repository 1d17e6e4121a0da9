use super::*;

#[test]
fn every_sentence_has_a_translation_in_every_language() {
    for msg in Msg::samples() {
        let english = Lang::En.text(&msg);
        for lang in Lang::ALL {
            let text = lang.text(&msg);
            assert!(!text.trim().is_empty(), "{msg:?} is empty in {lang:?}");
            if *lang != Lang::En && english.len() > 12 {
                assert_ne!(text, english, "{msg:?} is not translated to {lang:?}");
            }
        }
    }
}

#[test]
fn accept_language_honours_q_values_and_falls_back_to_english() {
    assert_eq!(Lang::negotiate(""), Lang::En);
    assert_eq!(Lang::negotiate("de"), Lang::De);
    assert_eq!(Lang::negotiate("de-AT,de;q=0.9,en;q=0.8"), Lang::De);
    assert_eq!(Lang::negotiate("en;q=0.5, de;q=0.9"), Lang::De);
    assert_eq!(Lang::negotiate("de;q=0.4, en-GB"), Lang::En);
    assert_eq!(Lang::negotiate("fr, de;q=0.7"), Lang::De);
    assert_eq!(Lang::negotiate("fr, it"), Lang::En);
    assert_eq!(Lang::negotiate("de;q=0, en;q=0.1"), Lang::En);
    assert_eq!(Lang::negotiate("DE-de"), Lang::De);
    assert_eq!(Lang::negotiate("*;q=0.1, de;q=0.2"), Lang::De);
    assert_eq!(Lang::negotiate("de;q=nonsense"), Lang::De);
}

#[test]
fn numbers_and_times_follow_the_language() {
    assert_eq!(Lang::En.text(&Msg::Span(86_400)), "1 day");
    assert_eq!(Lang::En.text(&Msg::Span(3_628_800)), "42 days");
    assert_eq!(Lang::En.text(&Msg::Span(5_400)), "90 minutes");
    assert_eq!(Lang::En.text(&Msg::Span(61)), "61 seconds");
    assert_eq!(Lang::De.text(&Msg::Span(86_400)), "1 Tag");
    assert_eq!(Lang::De.text(&Msg::Span(3_628_800)), "42 Tage");
    assert_eq!(Lang::De.text(&Msg::Span(7_200)), "2 Stunden");
    let t = 1_764_151_200_000; // 2025-11-26 10:00:00 UTC
    assert_eq!(Lang::En.text(&Msg::Time(t)), "2025-11-26 10:00:00 UTC");
    assert_eq!(Lang::De.text(&Msg::Time(t)), "26.11.2025, 10:00:00 UTC");
    assert_eq!(
        Lang::En.text(&Msg::Time(951_782_400_000)),
        "2000-02-29 00:00:00 UTC"
    );
    assert!(
        Lang::De
            .text(&Msg::TooManyFromVisitor(30))
            .contains("in 30 Sekunden")
    );
    assert!(
        Lang::En
            .text(&Msg::TooManyForAccount(1200))
            .contains("in 20 minutes")
    );
}
