//! The built-in pages, embedded in the binary and served self-contained (inline CSS and
//! script, no external assets). Each is assembled at compile time from the shared head,
//! style and session script (`pages/session.js`: address, WHIP/WHEP session life cycle,
//! stats table) and the page's own markup and script.

macro_rules! page {
    ($markup:literal, $script:literal) => {
        concat!(
            include_str!("pages/head.html"),
            "<style>\n",
            include_str!("pages/common.css"),
            "</style>\n",
            include_str!($markup),
            "<script>\n'use strict';\n",
            include_str!("pages/session.js"),
            include_str!($script),
            "</script>\n</body>\n</html>\n"
        )
    };
}

/// `GET /play/{stream}`: plays over WHEP, shows live stats.
pub const PLAY: &str = page!("pages/play.html", "pages/play.js");

/// `GET /publish/{stream}`: publishes the camera over WHIP.
pub const PUBLISH: &str = page!("pages/publish.html", "pages/publish.js");

#[cfg(test)]
mod tests {
    use super::{PLAY, PUBLISH};

    #[test]
    fn pages_are_whole_documents_with_one_script() {
        for (page, own) in [(PLAY, "resource: 'whep'"), (PUBLISH, "resource: 'whip'")] {
            assert!(page.starts_with("<!doctype html>"));
            assert!(page.trim_end().ends_with("</html>"));
            assert_eq!(page.matches("<script>").count(), 1);
            assert!(page.contains("function strataSession(cfg)"));
            assert!(page.contains(own));
            assert!(page.find("</head>") < page.find("<body>"));
        }
    }
}
