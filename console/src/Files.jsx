// Uploads to an object that has an upload action (drag and drop, several files, a progress
// bar over XHR) and its files, each downloaded by its SHA-256.

import { useEffect, useState } from "react";
import { downloadBlob, request, upload } from "./api.js";
import { xa } from "./schemas.js";
import { ProblemBox } from "./widgets.jsx";

/** The child type that links this type to files (its reference to `file`), if any. */
function fileLinkType(catalog, type) {
  for (const child of xa(catalog.schemas[type]).children || []) {
    const ref = (xa(catalog.schemas[child]).references || []).find((r) => r.type === "file");
    if (ref) return { child, relation: ref.name };
  }
  return null;
}

export function Files({ catalog, credential, type, id, itemPath, writable }) {
  const link = fileLinkType(catalog, type);
  const [rows, setRows] = useState([]);
  const [progress, setProgress] = useState(null);
  const [problem, setProblem] = useState(null);
  const [over, setOver] = useState(false);
  const [generation, setGeneration] = useState(0);

  useEffect(() => {
    if (!link) return;
    request(credential, "GET", `/v3/crud/${itemPath}/${link.child}`, { query: { include: link.relation, limit: 100 } })
      .then(({ body }) => setRows(body.data))
      .catch(setProblem);
  }, [credential, itemPath, generation]);

  const send = async (files) => {
    if (!files.length) return;
    setProblem(null);
    setProgress(0);
    try {
      await upload(credential, `/v3/action/${type}/${encodeURIComponent(id)}/upload`, files, setProgress);
      setGeneration((g) => g + 1);
    } catch (err) {
      setProblem(err);
    } finally {
      setTimeout(() => setProgress(null), 400);
    }
  };

  return (
    <section className="files">
      <h3>Files</h3>
      {writable ? (
        <div
          className={`dropzone${over ? " over" : ""}`}
          onDragOver={(e) => {
            e.preventDefault();
            setOver(true);
          }}
          onDragLeave={() => setOver(false)}
          onDrop={(e) => {
            e.preventDefault();
            setOver(false);
            send([...e.dataTransfer.files]);
          }}
        >
          Drop files here, or{" "}
          <label className="button">
            choose files
            <input type="file" multiple className="file-input" onChange={(e) => send([...e.target.files])} />
          </label>
          {progress !== null ? <progress className="upload-progress" max="1" value={progress} /> : null}
        </div>
      ) : null}
      <ProblemBox problem={problem} />
      {rows.length ? null : <p className="empty">No files yet.</p>}
      <table className="file-list">
        <tbody>
          {rows.map((row) => {
            const file = row[link.relation] || {};
            return (
              <tr key={row.id} data-id={row.id} data-sha256={file.sha256}>
                <td className="file-name">{file.name}</td>
                <td>{row.role}</td>
                <td>{file.size} bytes</td>
                <td>{file.mime_type}</td>
                <td>
                  <button type="button" className="download" onClick={() => downloadBlob(credential, file.sha256, file.name).catch(setProblem)}>
                    Download
                  </button>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}

export function hasFiles(catalog, type) {
  return Boolean(catalog.uploads[type] && fileLinkType(catalog, type));
}
