// The console: sign in, then every screen is generated from the schema index and each
// type's schema. Routes live in the URL's fragment and mirror the API's nested paths:
// `#/event`, `#/event/{id}`, `#/event/{id}/event_session`, `#/event/{id}/event_session/new`.

import { useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { EXPIRED_EVENT, loadCredential, login, Problem, saveCredential } from "./api.js";
import { CatalogContext } from "./context.js";
import { DetailView } from "./DetailView.jsx";
import { FormView } from "./FormView.jsx";
import { ListView } from "./ListView.jsx";
import { loadCatalog, titleOf, xa } from "./schemas.js";
import { ProblemBox } from "./widgets.jsx";

function useHash() {
  const [hash, setHash] = useState(window.location.hash || "#/");
  useEffect(() => {
    const onChange = () => setHash(window.location.hash || "#/");
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return hash;
}

const navigate = (hash) => {
  window.location.hash = hash.replace(/^#/, "");
};

function SignIn({ onSignedIn, notice }) {
  const [mode, setMode] = useState("password");
  const [problem, setProblem] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    setBusy(true);
    setProblem(null);
    try {
      const credential =
        mode === "password"
          ? await login(form.get("account"), form.get("email"), form.get("password"))
          : { kind: "apikey", value: String(form.get("api_key")).trim() };
      await onSignedIn(credential);
    } catch (err) {
      setProblem(err instanceof Problem ? err : new Problem(0, { detail: String(err) }));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="sign-in">
      <h1>Aether console</h1>
      {notice ? <p className="notice">{notice}</p> : null}
      <div className="modes">
        <button type="button" className={`mode-password${mode === "password" ? " active" : ""}`} onClick={() => setMode("password")}>
          Email and password
        </button>
        <button type="button" className={`mode-api-key${mode === "apikey" ? " active" : ""}`} onClick={() => setMode("apikey")}>
          API key
        </button>
      </div>
      <form onSubmit={submit} className="sign-in-form">
        {mode === "password" ? (
          <>
            <label>
              Account <input name="account" autoComplete="organization" required />
            </label>
            <label>
              Email <input name="email" type="email" autoComplete="username" required />
            </label>
            <label>
              Password <input name="password" type="password" autoComplete="current-password" required />
            </label>
          </>
        ) : (
          <label>
            API key <input name="api_key" type="password" autoComplete="off" required />
          </label>
        )}
        <button type="submit" className="primary sign-in-button" disabled={busy}>
          Sign in
        </button>
      </form>
      <ProblemBox problem={problem} />
      <p className="note">The credential is kept in this tab only (sessionStorage), never in a cookie.</p>
    </main>
  );
}

function TypeTree({ catalog, name, active, depth = 0 }) {
  const entry = catalog.index.find((e) => e.name === name);
  const children = entry?.children || [];
  return (
    <li>
      <a className={`nav-type${active === name ? " active" : ""}`} data-type={name} href={`#/${name}`}>
        {titleOf(catalog, name)}
      </a>
      {children.length && depth < 6 ? (
        <ul>
          {children.map((child) => (
            <TypeTree key={child} catalog={catalog} name={child} active={active} depth={depth + 1} />
          ))}
        </ul>
      ) : null}
    </li>
  );
}

function Home({ catalog }) {
  return (
    <section className="home">
      <h2>Object types</h2>
      <ul className="type-cards">
        {catalog.index.map((entry) => (
          <li key={entry.name}>
            <a href={`#/${entry.name}`}>{entry.title || entry.name}</a>
            {entry.description ? <p>{entry.description}</p> : null}
          </li>
        ))}
      </ul>
    </section>
  );
}

function Screen({ catalog, credential, hash }) {
  const segments = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const known = (name) => Boolean(catalog.schemas[name]);
  const props = { catalog, credential, navigate };
  if (!segments.length) return <Home catalog={catalog} />;
  const last = segments[segments.length - 1];
  const body = last === "new" || last === "edit" ? segments.slice(0, -1) : segments;
  const types = body.filter((_, i) => i % 2 === 0);
  if (!types.every(known)) return <ProblemBox problem={new Problem(404, { title: "Not found", detail: `No such screen: ${hash}` })} />;
  if (last === "new" && body.length % 2 === 1) {
    const type = body[body.length - 1];
    const parentField = body.length > 1 ? xa(catalog.schemas[type]).parent?.field : null;
    return <FormView key={hash} {...props} type={type} mode="create" apiPath={`/v3/crud/${body.join("/")}`} hashBack={`#/${body.join("/")}`} omit={parentField ? [parentField] : []} />;
  }
  if (last === "edit" && body.length % 2 === 0) {
    const type = body[body.length - 2];
    return <FormView key={hash} {...props} type={type} mode="edit" apiPath={`/v3/crud/${body.join("/")}`} hashBack={`#/${body.join("/")}`} />;
  }
  if (segments.length === 1) {
    const type = segments[0];
    return (
      <>
        <h2>{titleOf(catalog, type)}</h2>
        <ListView key={type} {...props} type={type} apiBase={`/v3/crud/${type}`} hashBase={`#/${type}`} />
      </>
    );
  }
  if (segments.length % 2 === 1) {
    return <DetailView key={segments.slice(0, -1).join("/")} {...props} segments={segments.slice(0, -1)} tab={last} />;
  }
  return <DetailView key={segments.join("/")} {...props} segments={segments} tab={null} />;
}

function App() {
  const hash = useHash();
  const [credential, setCredential] = useState(loadCredential);
  const [catalog, setCatalog] = useState(null);
  const [problem, setProblem] = useState(null);
  const [notice, setNotice] = useState(null);

  const signIn = async (next) => {
    const loaded = await loadCatalog(next);
    saveCredential(next);
    setCredential(next);
    setCatalog(loaded);
  };
  const signOut = (message = null) => {
    saveCredential(null);
    setCredential(null);
    setCatalog(null);
    setNotice(message);
  };

  useEffect(() => {
    const refused = () => signOut("The server refused the credential (expired or revoked): sign in again.");
    window.addEventListener(EXPIRED_EVENT, refused);
    return () => window.removeEventListener(EXPIRED_EVENT, refused);
  }, []);

  useEffect(() => {
    if (credential && !catalog) {
      loadCatalog(credential)
        .then(setCatalog)
        .catch((err) => {
          if (err.status !== 401) setProblem(err);
        });
    }
  }, []);

  if (!credential) return <SignIn onSignedIn={signIn} notice={notice} />;
  if (!catalog) return problem ? <ProblemBox problem={problem} /> : <p className="loading">Loading the schemas…</p>;
  const activeType = hash.replace(/^#\/?/, "").split("/")[0];
  const roots = catalog.index.filter((e) => !e.parent).map((e) => e.name);
  return (
    <CatalogContext.Provider value={{ catalog, credential }}>
      <header className="top">
        <a className="brand" href="#/">
          Aether console
        </a>
        <span className="whoami">
          role: <strong className="role">{catalog.role}</strong>
        </span>
        <button type="button" className="sign-out" onClick={() => signOut()}>
          Sign out
        </button>
      </header>
      <div className="layout">
        <nav className="types">
          <ul>
            {roots.map((name) => (
              <TypeTree key={name} catalog={catalog} name={name} active={activeType} />
            ))}
          </ul>
        </nav>
        <main className="screen">
          <Screen catalog={catalog} credential={credential} hash={hash} />
        </main>
      </div>
    </CatalogContext.Provider>
  );
}

createRoot(document.getElementById("console")).render(<App />);
