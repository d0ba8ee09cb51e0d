"""Pages in English and Korean: every message id translated, the language chosen by
Accept-Language or the switch (remembered in a cookie), and Korean pages that really are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from starlette.testclient import TestClient

from authserver.db import Database
from authserver.web.i18n import LOCALE_DIR, negotiate, translations
from tests.oauth_helpers import authorize_params, consent_page, interaction_page, login, pkce_pair, seed

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"%\(\w+\)s")
TAG = re.compile(r"</?\w+")


def source_ids() -> set[str]:
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    return {message for _, _, message, *_ in extract_from_dir(str(ROOT), method_map, options_map, keywords)
            if isinstance(message, str)}


def korean() -> dict[str, tuple[str, bool]]:
    with (LOCALE_DIR / "ko" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return {m.id: (m.string, m.fuzzy) for m in read_po(handle) if m.id and isinstance(m.id, str)}


def test_every_message_id_has_a_korean_translation() -> None:
    ids, catalog = source_ids(), korean()
    assert len(ids) > 40
    missing = sorted(i for i in ids if not catalog.get(i, ("", False))[0])
    assert missing == [], f"run `make messages` and translate: {missing}"
    assert sorted(i for i in ids if catalog[i][1]) == [], "fuzzy translations are not used by gettext"
    assert sorted(set(catalog) - ids) == [], "obsolete entries: run `make messages`"


def test_translations_keep_placeholders_and_markup() -> None:
    for message_id, (text, _) in korean().items():
        assert sorted(PLACEHOLDER.findall(message_id)) == sorted(PLACEHOLDER.findall(text)), message_id
        assert sorted(TAG.findall(message_id)) == sorted(TAG.findall(text)), message_id


def test_korean_catalog_compiles_and_english_is_the_source() -> None:
    assert translations("ko").gettext("Allow") == "허용"
    assert translations("en").gettext("Allow") == "Allow"


@pytest.mark.parametrize(("cookie", "header", "expected"), [
    (None, "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"),
    (None, "en-US,en;q=0.9,ko;q=0.8", "en"),
    (None, "fr-FR,fr;q=0.9", "en"),
    (None, "fr;q=0.9, ko;q=0.5", "ko"),
    (None, "ko;q=0", "en"),
    (None, "ko;q=banana, en", "en"),
    (None, None, "en"),
    ("ko", "en-US", "ko"),  # the switch wins over the browser
    ("en", "ko", "en"),
    ("xx", "ko", "ko"),  # an unknown cookie value is ignored
])
def test_language_negotiation(cookie: str | None, header: str | None, expected: str) -> None:
    assert negotiate(cookie, header) == expected


def test_consent_page_in_korean_by_accept_language(client: TestClient, db: Database) -> None:
    world = seed(db)
    client.headers["accept-language"] = "ko-KR,ko;q=0.9,en;q=0.5"
    page = consent_page(client, authorize_params(world.public_id, pkce_pair()[1],
                                                 scope="read:calendar write:calendar"))
    assert '<html lang="ko">' in page.text
    assert "허용" in page.text and "거부" in page.text and "연결 유지" in page.text
    assert "<strong>Desktop Agent</strong> 앱이" in page.text
    # Scope descriptions stay as the operator wrote them.
    assert "Create, change and delete your calendar events" in page.text
    # The buttons keep their protocol values.
    assert 'name="decision" value="allow"' in page.text


def test_switch_sets_a_cookie_and_returns_to_the_page(client: TestClient, db: Database) -> None:
    world = seed(db)
    page = interaction_page(client, authorize_params(world.public_id, pkce_pair()[1]))
    assert '<html lang="en">' in page.text
    link = re.search(r'href="(/language\?[^"]+)"[^>]*>한국어', page.text)
    assert link, page.text
    response = client.get(link.group(1).replace("&amp;", "&"))
    assert response.status_code == 303
    assert response.headers["location"].startswith("/interaction/")
    assert "authserver_lang=ko" in response.headers["set-cookie"]
    again = client.get(response.headers["location"])
    assert '<html lang="ko">' in again.text and "로그인" in again.text


def test_switch_never_leaves_the_site(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "/ok\r\nSet-Cookie: x=1"):
        response = client.get("/language", params={"lang": "ko", "next": target})
        assert response.status_code == 303
        assert response.headers["location"] == "/account"


def test_error_page_and_failed_sign_in_in_korean(client: TestClient, db: Database) -> None:
    world = seed(db)
    client.cookies.set("authserver_lang", "ko")
    params = authorize_params(world.public_id, pkce_pair()[1])
    response = client.get("/authorize", params=[*params.items(), ("client_id", world.public_id)])
    assert response.status_code == 400
    assert "client_id 매개변수가 두 번 이상 전송되었습니다." in response.text
    page = interaction_page(client, params)
    failed = login(client, page.text, password="wrong password")
    assert failed.status_code == 401
    assert "사용자 이름과 비밀번호가 활성 계정과 일치하지 않습니다." in failed.text


def test_console_stays_english_without_a_switch(app, db: Database) -> None:  # type: ignore[no-untyped-def]
    from tests.admin_pages import browser, make_user

    make_user(db, "root", "admin")
    with browser(app, "root") as admin:
        admin.cookies.set("authserver_lang", "ko")
        page = admin.get("/admin")
        assert page.status_code == 200
        assert '<html lang="en">' in page.text and "/language?" not in page.text
        assert '<html lang="ko">' in admin.get("/account").text
