//! Deutsch. Anrede mit „Sie“; Zeiten als „26.11.2025, 10:00:00 UTC“.

use super::{BrokerWhy, CheckTrouble, Group, Msg, NameKind, Unit, When};
use crate::Task;

fn whether(task: Task) -> &'static str {
    match task {
        Task::Unlock => "ob Ihr Konto entsperrt wurde",
        Task::Reset | Task::Change => "ob Ihr Passwort geändert wurde",
    }
}

fn sign_in_hint(task: Task) -> &'static str {
    match task {
        Task::Unlock => {
            "Versuchen Sie, sich anzumelden; ist Ihr Konto noch gesperrt, versuchen Sie es erneut"
        }
        Task::Reset | Task::Change => {
            "Versuchen Sie, sich mit dem neuen Passwort anzumelden; gelingt das nicht, \
             versuchen Sie es erneut"
        }
    }
}

fn why(why: BrokerWhy) -> &'static str {
    match why {
        BrokerWhy::NotConnected => {
            "Der Passwortdienst meldet, dass der lokale Dienst nicht verbunden ist"
        }
        BrokerWhy::WritebackOff => {
            "Der Passwortdienst meldet, dass das Zurückschreiben von Passwörtern für Ihre \
             Organisation ausgeschaltet ist"
        }
        BrokerWhy::TooManyRequests => "Der Passwortdienst meldet, dass er zu viele Anfragen erhält",
        BrokerWhy::Busy => "Der Passwortdienst meldet, dass der lokale Dienst ausgelastet ist",
        BrokerWhy::Restarting => "Der Passwortdienst meldet, dass er neu startet",
        BrokerWhy::Unreachable => "Der Passwortdienst ist zurzeit nicht erreichbar",
    }
}

fn when(when: &When) -> String {
    match when {
        When::Later => "später".into(),
        When::InAMoment => "gleich".into(),
        When::AfterHelpDesk => "nach Rücksprache mit Ihrem Helpdesk".into(),
        When::In(secs) => format!("in {}", wait(*secs)),
    }
}

/// Dative, after „in“: „in 30 Sekunden“, „in 1 Minute“.
fn wait(secs: u64) -> String {
    match secs {
        0..=1 => "einer Sekunde".to_owned(),
        2..=90 => format!("{secs} Sekunden"),
        _ => {
            let minutes = secs.div_ceil(60);
            if minutes == 1 {
                "einer Minute".to_owned()
            } else {
                format!("{minutes} Minuten")
            }
        }
    }
}

fn span(secs: u64) -> String {
    let (n, unit) = super::largest_unit(secs);
    let unit = match (unit, n == 1) {
        (Unit::Day, true) => "Tag",
        (Unit::Day, false) => "Tage",
        (Unit::Hour, true) => "Stunde",
        (Unit::Hour, false) => "Stunden",
        (Unit::Minute, true) => "Minute",
        (Unit::Minute, false) => "Minuten",
        (Unit::Second, true) => "Sekunde",
        (Unit::Second, false) => "Sekunden",
    };
    format!("{n} {unit}")
}

/// „26.11.2025, 10:00:00 UTC“.
fn time(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s) = super::utc(unix_ms);
    format!("{d:02}.{mo:02}.{y:04}, {h:02}:{mi:02}:{s:02} UTC")
}

fn group(g: Group) -> &'static str {
    match g {
        Group::Uppercase => "einen Großbuchstaben",
        Group::Lowercase => "einen Kleinbuchstaben",
        Group::Digit => "eine Ziffer",
        Group::Symbol => "ein Sonderzeichen",
    }
}

fn groups(g: Group) -> &'static str {
    match g {
        Group::Uppercase => "Großbuchstaben",
        Group::Lowercase => "Kleinbuchstaben",
        Group::Digit => "Ziffern",
        Group::Symbol => "Sonderzeichen",
    }
}

fn participle(task: Task) -> &'static str {
    match task {
        Task::Reset => "zurückgesetzt",
        Task::Change => "geändert",
        Task::Unlock => "entsperrt",
    }
}

pub fn text(msg: &Msg) -> String {
    match msg {
        Msg::Banner => "Demo-Portal: Die Prüfung der Identität ist nicht Teil dieser \
             Referenz. Ein echtes Portal lässt Benutzer nachweisen, wer sie sind (zum Beispiel \
             mit Mehrfaktor-Authentifizierung), bevor sie diese Seiten erreichen."
            .into(),
        Msg::Heading(Task::Reset) => "Vergessenes Passwort zurücksetzen".into(),
        Msg::Heading(Task::Change) => "Passwort ändern".into(),
        Msg::Heading(Task::Unlock) => "Konto entsperren".into(),
        Msg::HomeHeading => "Was möchten Sie tun?".into(),
        Msg::TasksLabel => "Aufgaben".into(),
        Msg::AccountIntro(Task::Reset) => "Geben Sie Ihr Konto ein. Der nächste Schritt zeigt \
             die Passwortregeln Ihrer Organisation, bevor Sie ein neues Passwort wählen."
            .into(),
        Msg::AccountIntro(Task::Change) => "Geben Sie Ihr Konto ein. Der nächste Schritt zeigt \
             die Passwortregeln Ihrer Organisation; Sie brauchen Ihr aktuelles Passwort."
            .into(),
        Msg::AccountIntro(Task::Unlock) => "Wurde Ihr Konto nach zu vielen Anmeldeversuchen \
             gesperrt, entsperren Sie es hier. Ihr Passwort bleibt unverändert."
            .into(),
        Msg::AccountButton(Task::Unlock) => "Konto entsperren".into(),
        Msg::AccountButton(Task::Reset | Task::Change) => "Weiter".into(),
        Msg::AccountLabel => "Konto (Ihr Anmeldename, etwa name@example.com)".into(),
        Msg::AccountLabelShort => "Konto".into(),
        Msg::RulesHeading => "Ihr neues Passwort braucht".into(),
        Msg::RulesUnknown => "Die Passwortregeln Ihrer Organisation (jede Regel, die Ihr \
             Passwort verletzt, wird beim Absenden genannt)."
            .into(),
        Msg::RulesUnreadable => "Die Passwortregeln dieses Kontos konnten nicht gelesen \
             werden. Jede Regel, die Ihr Passwort verletzt, wird beim Absenden genannt."
            .into(),
        Msg::PolicySource(source) => format!("Richtlinie: {source}"),
        Msg::CurrentPassword => "Aktuelles Passwort".into(),
        Msg::NewPassword => "Neues Passwort".into(),
        Msg::ConfirmPassword => "Neues Passwort bestätigen".into(),
        Msg::PasswordButton(Task::Change) => "Passwort ändern".into(),
        Msg::PasswordButton(Task::Reset | Task::Unlock) => "Neues Passwort festlegen".into(),
        Msg::ResetAlsoUnlocks => "Dieses Konto ist gesperrt. Mit dem neuen Passwort wird es \
             auch entsperrt."
            .into(),
        Msg::UseAnotherAccount => "Anderes Konto verwenden".into(),
        Msg::StartAgain => "Neu beginnen".into(),
        Msg::BackToStart => "Zurück zur Startseite".into(),
        Msg::CheckAgain => "Erneut prüfen".into(),
        Msg::HelpDeskReference(id) => format!("Referenz für Ihren Helpdesk: {id}"),
        Msg::SupportCode(code) => format!("Supportcode für Ihren Helpdesk: {code}"),
        Msg::NotFoundHeading => "Seite nicht gefunden".into(),
        Msg::NotFound => "Unter dieser Adresse gibt es keine Seite.".into(),
        Msg::TooManyHeading => "Zu viele Versuche".into(),
        Msg::UnknownRequestHeading => "Unbekannte Anfrage".into(),
        Msg::UnknownRequest => "Diese Anfragereferenz stammt nicht von diesem Portal. Es \
             wurde nichts geprüft."
            .into(),
        Msg::FormUnreadableHeading => "Dieses Formular konnte nicht gelesen werden".into(),
        Msg::FormUnreadable => "Das Formular kam unvollständig oder zu groß an. Es wurde \
             nichts gesendet. Gehen Sie zurück und versuchen Sie es erneut."
            .into(),
        Msg::FormExpiredHeading => "Dieses Formular ist abgelaufen".into(),
        Msg::FormExpired => "Die Sicherheitsprüfung dieses Formulars ist fehlgeschlagen: Es \
             wurde in einem anderen Browser geöffnet, das Portal wurde neu gestartet oder \
             Cookies sind blockiert. Es wurde nichts gesendet. Beginnen Sie erneut auf der \
             ersten Seite."
            .into(),
        Msg::ConfirmIntro(Task::Reset) => "Im nächsten Schritt sehen Sie die Passwortregeln \
             Ihrer Organisation, bevor Sie ein neues Passwort wählen."
            .into(),
        Msg::ConfirmIntro(Task::Change) => "Im nächsten Schritt sehen Sie die Passwortregeln \
             Ihrer Organisation; Sie brauchen dazu Ihr aktuelles Passwort."
            .into(),
        Msg::ConfirmIntro(Task::Unlock) => "Wurde Ihr Konto nach zu vielen Anmeldeversuchen \
             gesperrt, entsperren Sie es hier. Ihr Passwort bleibt unverändert."
            .into(),
        Msg::SigninUnavailableHeading => "Anmeldung nicht möglich".into(),
        Msg::SigninUnavailable => "Das Portal erreicht den Identitätsanbieter nicht, daher können \
             Sie sich gerade nicht anmelden. Es wurde nichts geändert. Versuchen Sie es in einigen \
             Minuten erneut; wenn es so bleibt, wenden Sie sich an Ihren Helpdesk."
            .into(),
        Msg::SigninExpiredHeading => "Erneut anmelden".into(),
        Msg::SigninExpired => "Ihre Anmeldung ist abgelaufen, daher wurde nichts gesendet. \
             Melden Sie sich erneut an, um fortzufahren."
            .into(),
        Msg::SignIn => "Anmelden".into(),
        Msg::SigninNotAcceptedHeading => "Anmeldung nicht angenommen".into(),
        Msg::SigninNotOurs => "Diese Antwort gehört zu keiner Anmeldung, die in diesem Browser \
             begonnen wurde, oder sie kam zu spät. Sie sind nicht angemeldet. Beginnen Sie erneut \
             auf der ersten Seite."
            .into(),
        Msg::SigninNotCompletedHeading => "Anmeldung nicht abgeschlossen".into(),
        Msg::SigninProviderRefused(why) => format!(
            "Der Identitätsanbieter hat Sie nicht angemeldet ({why}). Sie sind nicht angemeldet."
        ),
        Msg::SigninInvalid => "Die Antwort des Identitätsanbieters ließ sich nicht prüfen. Sie \
             sind nicht angemeldet. Beginnen Sie erneut; wenn es so bleibt, wenden Sie sich an \
             Ihren Helpdesk."
            .into(),
        Msg::SigninTooWeakHeading => "Stärkere Anmeldung nötig".into(),
        Msg::SigninTooWeak => "Ihre Anmeldung hat nicht die Prüfung verwendet, die dieses Portal \
             verlangt (etwa eine Mehrfaktor-Authentifizierung). Sie sind nicht angemeldet, und es \
             wurde nichts geändert. Melden Sie sich mit Ihrem zweiten Faktor erneut an oder lassen \
             Sie ihn von Ihrem Helpdesk einrichten."
            .into(),
        Msg::SigninNoAccountHeading => "Kein Konto gefunden".into(),
        Msg::SigninNoAccount(claim) => format!(
            "Der Identitätsanbieter hat nicht angegeben, welches Konto Ihres ist (kein \
             verwendbarer Claim \u{201e}{claim}\u{201c}). Sie sind nicht angemeldet. Wenden Sie \
             sich an Ihren Helpdesk."
        ),
        Msg::SignedOutHeading => "Abgemeldet".into(),
        Msg::SignedOut => "Sie sind von diesem Portal abgemeldet.".into(),
        Msg::ProviderSignoutIntro => {
            "An einem gemeinsam genutzten Computer melden Sie sich bitte auch ab".into()
        }
        Msg::ProviderSignoutLink => "beim Anmeldedienst Ihrer Organisation".into(),
        Msg::SignedInAs => "Angemeldet als".into(),
        Msg::SignOut => "Abmelden".into(),
        Msg::EnterAccount => {
            "Geben Sie Ihr Konto ein: Ihren Anmeldenamen, etwa name@example.com.".into()
        }
        Msg::NotAnAccount => "Das ist kein Kontoname: Verwenden Sie Ihren Anmeldenamen, etwa \
             name@example.com."
            .into(),
        Msg::EnterCurrentPassword => "Geben Sie Ihr aktuelles Passwort ein.".into(),
        Msg::EnterNewPassword => "Geben Sie ein neues Passwort ein.".into(),
        Msg::PasswordsDiffer => "Die beiden neuen Passwörter unterscheiden sich. Geben Sie in \
             beiden Feldern dasselbe neue Passwort ein."
            .into(),
        Msg::PasswordTooLong(n) => {
            format!("Das Passwort ist zu lang: Verwenden Sie höchstens {n} Zeichen.")
        }
        Msg::TooManyFromVisitor(secs) => format!(
            "Zu viele Anfragen von Ihrer Netzwerkadresse. Es wurde nichts gesendet. \
             Versuchen Sie es in {} erneut.",
            wait(*secs)
        ),
        Msg::TooManyForAccount(secs) => format!(
            "Zu viele Anfragen für dieses Konto. Es wurde nichts gesendet. Versuchen Sie es \
             in {} erneut.",
            wait(*secs)
        ),
        Msg::RuleMinLength(n) => format!("Mindestens {n} Zeichen."),
        Msg::RuleComplexity => "Zeichen aus mindestens drei dieser Gruppen: Großbuchstaben, \
             Kleinbuchstaben, Ziffern, Sonderzeichen (etwa ! $ # %). Leerzeichen zählen nicht."
            .into(),
        Msg::RuleAvoidName => {
            "Vermeiden Sie Ihren Kontonamen und Teile Ihres vollständigen Namens.".into()
        }
        Msg::RuleHistory(n) => format!(
            "Es muss sich von Ihren letzten {n} Passwörtern unterscheiden, das aktuelle \
             eingeschlossen."
        ),
        Msg::RuleMinAge(secs) => format!(
            "Mindestabstand zwischen zwei Änderungen Ihres Passworts: {}.",
            span(*secs)
        ),
        Msg::RuleMaxAge(secs) => format!("Gültigkeitsdauer: {}.", span(*secs)),
        Msg::Span(secs) => span(*secs),
        Msg::Time(ms) => time(*ms),
        Msg::Success(Task::Reset | Task::Change) => "Ihr Passwort wurde geändert. Sie können \
             sich jetzt mit dem neuen Passwort anmelden."
            .into(),
        Msg::Success(Task::Unlock) => {
            "Ihr Konto wurde entsperrt. Sie können sich wieder anmelden.".into()
        }
        Msg::NotApplied(task) => format!(
            "Der lokale Dienst hat diese Zustellung Ihrer Anfrage nicht ausgeführt. Wir \
             konnten nicht bestätigen, {}. {} gleich.",
            whether(*task),
            sign_in_hint(*task)
        ),
        Msg::TooShort(n) => format!("Das Passwort muss mindestens {n} Zeichen haben."),
        Msg::MissingOne(list) => {
            let names: Vec<&str> = list.iter().map(|g| group(*g)).collect();
            format!(
                "Dem Passwort fehlt eine Zeichenart: Fügen Sie {} hinzu.",
                names.join(" oder ")
            )
        }
        Msg::MissingSeveral(list) => {
            let names: Vec<&str> = list.iter().map(|g| groups(*g)).collect();
            let needed = list.len().saturating_sub(1);
            format!(
                "Das Passwort braucht Zeichen aus mindestens drei Gruppen (Großbuchstaben, \
                 Kleinbuchstaben, Ziffern, Sonderzeichen; Leerzeichen zählen nicht): Fügen \
                 Sie Zeichen aus {} dieser Gruppen hinzu: {}.",
                if needed == 2 { "zwei" } else { "drei" },
                names.join(", ")
            )
        }
        Msg::MustNotContain(kind, name) => {
            let what = match kind {
                NameKind::Account => "Ihren Kontonamen",
                NameKind::Display => "keinen Teil Ihres vollständigen Namens",
                NameKind::Either => "Ihren Kontonamen oder Teile Ihres vollständigen Namens",
            };
            let (not, what) = match kind {
                NameKind::Display => ("", what),
                NameKind::Account | NameKind::Either => ("nicht ", what),
            };
            match name {
                Some(name) => {
                    format!("Das Passwort darf {what} {not}enthalten (\u{201e}{name}\u{201c}).")
                }
                None => format!("Das Passwort darf {what} {not}enthalten."),
            }
        }
        Msg::InHistory(n) => format!(
            "Das Passwort muss sich von Ihren letzten {n} Passwörtern unterscheiden, das \
             aktuelle eingeschlossen. Wählen Sie eines, das Sie noch nicht verwendet haben."
        ),
        Msg::ChangedTooRecently(ms) => format!(
            "Ihr Passwort wurde erst vor Kurzem geändert. Sie können es nach {} wieder ändern.",
            time(*ms)
        ),
        Msg::PolicyNotMet => "Das Passwort erfüllt die Passwortregeln Ihrer Organisation \
             nicht, daher wurde nichts geändert. Wählen Sie ein anderes Passwort."
            .into(),
        Msg::WrongCurrentPassword => {
            "Das aktuelle Passwort ist nicht korrekt, daher wurde nichts geändert.".into()
        }
        Msg::AccountDisabled => "Dieses Konto ist deaktiviert, daher wurde nichts geändert. \
             Wenden Sie sich bitte an Ihren Helpdesk."
            .into(),
        Msg::AccountLocked(task) => format!(
            "Dieses Konto ist gesperrt, daher kann sein Passwort nicht {} werden. Entsperren \
             Sie es zuerst (\u{201e}Konto entsperren\u{201c}) oder legen Sie ein neues fest \
             (\u{201e}Vergessenes Passwort zurücksetzen\u{201c}) und versuchen Sie es dann \
             erneut.",
            participle(*task)
        ),
        Msg::UserNotFound(account) => format!(
            "Es wurde kein Konto namens \u{201e}{account}\u{201c} gefunden. Prüfen Sie die \
             Schreibweise: Verwenden Sie Ihren vollständigen Anmeldenamen, etwa \
             name@example.com."
        ),
        Msg::SeveralMatches(account) => format!(
            "Mehrere Konten heißen \u{201e}{account}\u{201c}, daher wurde nichts geändert. \
             Wenden Sie sich bitte an Ihren Helpdesk: Er muss die Doppelung auflösen."
        ),
        Msg::PermissionDenied(Some(right)) => format!(
            "Der Passwortdienst darf dieses Konto nicht ändern (ihm fehlt die Berechtigung \
             \u{201e}{right}\u{201c}). Es wurde nichts geändert. Ihr Helpdesk kann das beheben."
        ),
        Msg::PermissionDenied(None) => "Der Passwortdienst darf dieses Konto nicht ändern. \
             Es wurde nichts geändert. Ihr Helpdesk kann das beheben."
            .into(),
        Msg::ProtectedAccount(task) => format!(
            "Dies ist ein geschütztes Administratorkonto: Es kann in diesem Portal nicht {} \
             werden. Es wurde nichts geändert. Wenden Sie sich bitte an Ihren Helpdesk.",
            participle(*task)
        ),
        Msg::WritebackDisabled => "Das Zurückschreiben von Passwörtern ist im lokalen Dienst \
             ausgeschaltet, daher wurde nichts geändert. Wenden Sie sich bitte an Ihren \
             Helpdesk."
            .into(),
        Msg::DirectoryUnavailable => "Das lokale Verzeichnis war nicht erreichbar, daher \
             wurde nichts geändert. Versuchen Sie es bitte später erneut."
            .into(),
        Msg::PolicyRefused(Some(n)) => format!(
            "Die Passwortregeln Ihrer Organisation haben dieses Passwort abgelehnt: Es ist \
             vielleicht eines Ihrer letzten {n} Passwörter oder enthält ein nicht erlaubtes \
             Wort. Es wurde nichts geändert; wählen Sie ein anderes Passwort."
        ),
        Msg::PolicyRefused(None) => "Die Passwortregeln Ihrer Organisation haben dieses \
             Passwort abgelehnt: Es enthält vielleicht ein nicht erlaubtes Wort. Es wurde \
             nichts geändert; wählen Sie ein anderes Passwort."
            .into(),
        Msg::AgentRateLimited(Some((limit, secs))) => format!(
            "Zu viele Versuche für dieses Konto: höchstens {limit} pro Stunde. Es wurde nichts \
             geändert; versuchen Sie es in {} erneut.",
            wait(*secs)
        ),
        Msg::AgentRateLimited(None) => "Zu viele Versuche für dieses Konto. Es wurde nichts \
             geändert; versuchen Sie es später erneut."
            .into(),
        Msg::Refused => "Die Anfrage wurde abgelehnt, daher wurde nichts geändert. Wenden Sie \
             sich bitte an Ihren Helpdesk."
            .into(),
        Msg::CannotHere(task) => format!(
            "Dieses Konto kann hier nicht {} werden. Prüfen Sie, ob Sie Ihren Anmeldenamen \
             richtig eingegeben haben; wenn ja, wenden Sie sich an Ihren Helpdesk und nennen \
             Sie den Supportcode unten.",
            participle(*task)
        ),
        Msg::Misconfigured => "Der Dienst ist falsch konfiguriert, daher wurde nichts \
             geändert. Wenden Sie sich bitte an Ihren Helpdesk."
            .into(),
        Msg::MisconfiguredUnconfirmed => "Der Dienst meldet, dass er falsch konfiguriert ist, \
             und wir konnten nicht bestätigen, ob etwas geändert wurde. Wenden Sie sich bitte \
             an Ihren Helpdesk."
            .into(),
        Msg::PolicyNoAnswer => "Der lokale Dienst hat nicht rechtzeitig geantwortet. \
             Versuchen Sie es bitte erneut."
            .into(),
        Msg::NoAnswer { task, can_check } => format!(
            "Wir konnten nicht bestätigen, {}: Die Anfrage hat den lokalen Dienst vielleicht \
             erreicht, aber keine Antwort kam rechtzeitig zurück. {}",
            whether(*task),
            if *can_check {
                "Fragen Sie gleich mit \u{201e}Erneut prüfen\u{201c} nach der Antwort."
            } else {
                "Versuchen Sie, sich anzumelden, bevor Sie es erneut versuchen."
            }
        ),
        Msg::Unconfirmed {
            task,
            why: w,
            when: at,
        } => format!(
            "{}. Wir konnten nicht bestätigen, {}. {} ({}).",
            why(*w),
            whether(*task),
            sign_in_hint(*task),
            when(at)
        ),
        Msg::BrokerSays { why: w, when: at } => {
            format!("{}. Versuchen Sie es bitte {} erneut.", why(*w), when(at))
        }
        Msg::UnreachableNothingChanged => "Der Passwortdienst ist zurzeit nicht erreichbar, \
             daher wurde nichts geändert. Versuchen Sie es bitte später erneut."
            .into(),
        Msg::CheckFailed(task, trouble) => {
            let what = whether(*task);
            match trouble {
                CheckTrouble::Pending => format!(
                    "Noch keine Antwort: Der lokale Dienst hat noch nicht gemeldet, {what}. \
                     Prüfen Sie bitte gleich erneut."
                ),
                CheckTrouble::NoRecord => format!(
                    "Der Dienst kennt keine Antwort auf diese Anfrage, daher können wir nicht \
                     sagen, {what}. Versuchen Sie, sich anzumelden, bevor Sie es erneut \
                     versuchen."
                ),
                CheckTrouble::NoLongerHere => format!(
                    "Dieses Portal kann die Anfrage nicht mehr prüfen (es wurde neu gestartet \
                     oder die Antwort wurde schon angezeigt), daher können wir nicht sagen, \
                     {what}. Versuchen Sie, sich anzumelden, bevor Sie es erneut versuchen."
                ),
                CheckTrouble::Unreadable => format!(
                    "Die Antwort kam an, konnte aber nicht gelesen werden, daher können wir \
                     nicht sagen, {what}. Versuchen Sie, sich anzumelden, bevor Sie es erneut \
                     versuchen."
                ),
                CheckTrouble::Unreachable => format!(
                    "Wir konnten den Dienst nicht fragen, {what}. Prüfen Sie bitte gleich \
                     erneut."
                ),
            }
        }
    }
}
