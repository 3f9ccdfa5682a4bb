"""Plant identifiers everywhere a hospital export hides them, and search outputs for them.

`write_planted_source` writes a CSV source (docs/data.md) of real-DICOM phantom slices
whose headers, nested sequences, private blocks, file names and folder names carry the
values of a `Plant`; `variants` lists the spellings each value may take after a tool
touched it (case, date formats, name order); `find_planted` searches bytes for them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pydicom
from datadir_factory import phantom_hu, write_slice
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

SIZE, BODY, BOX = (96, 96), (51, 54, 11, 9), (40.0, 45.0, 62.0, 63.0)


@dataclass(frozen=True)
class Plant:
    """The identifying values of one planted patient (every one at least 6 characters)."""

    family: str
    given: str
    mrn: str
    birth_date: str
    accession: str
    other_mrn: str
    alt_birth_date: str
    trial_subject: str
    trial_site: str
    phone: str
    device_text: str
    private_text: str
    institution: str
    uid_root: str

    def values(self) -> dict[str, str]:
        """Label -> planted value."""
        return dict(vars(self))


def variants(plant: Plant) -> dict[str, str]:
    """Spelling -> label: every value, its date reformattings and name orders."""
    found = {value: label for label, value in plant.values().items()}
    for label in ("birth_date",):
        d = getattr(plant, label)
        y, m, day = d[:4], d[4:6], d[6:8]
        for text in (f"{y}-{m}-{day}", f"{day}.{m}.{y}", f"{m}/{day}/{y}", f"{y}/{m}/{day}"):
            found[text] = label
    found[f"{plant.family}^{plant.given}"] = "name"
    found[f"{plant.given} {plant.family}"] = "name"
    found[plant.mrn.replace("-", "")] = "mrn"
    return found


def find_planted(blob: bytes, plant: Plant) -> list[str]:
    """The planted spellings found in `blob`, case-insensitively."""
    lower = blob.lower()
    return sorted(text for text in variants(plant) if text.lower().encode() in lower)


def plant_header(path: Path, plant: Plant) -> None:
    """Rewrite a slice's header with `plant`'s values at top level, nested and private."""
    ds = pydicom.dcmread(path)
    ds.PatientName = f"{plant.family}^{plant.given}"
    ds.PatientBirthDate = plant.birth_date
    ds.AccessionNumber = plant.accession
    ds.InstitutionName = plant.institution
    ds.StudyInstanceUID = f"{plant.uid_root}.1"
    ds.SeriesInstanceUID = f"{plant.uid_root}.2"
    ds.FrameOfReferenceUID = f"{plant.uid_root}.4"
    ds.add_new(0x00100033, "LO", plant.alt_birth_date)  # birth date, alternative calendar
    ds.ClinicalTrialSubjectID = plant.trial_subject
    ds.ClinicalTrialSiteName = plant.trial_site
    ds.ClinicalTrialSponsorName = plant.trial_site
    ds.AcquisitionDeviceProcessingDescription = plant.device_text
    group = Dataset()  # (0010,0026) Source Patient Group Identification Sequence
    group.PatientID = plant.other_mrn
    group.IssuerOfPatientID = plant.institution
    ds.SourcePatientGroupIdentificationSequence = Sequence([group])
    physician = Dataset()
    physician.PersonTelephoneNumbers = plant.phone
    physician.InstitutionName = plant.institution
    ds.PerformingPhysicianIdentificationSequence = Sequence([physician])
    referenced = Dataset()  # an allow-listed sequence whose item carries more than UIDs
    referenced.ReferencedSOPClassUID = ds.SOPClassUID
    referenced.ReferencedSOPInstanceUID = f"{plant.uid_root}.3"
    referenced.PatientName = f"{plant.family}^{plant.given}"
    referenced.private_block(0x0019, "PHI PACS", create=True).add_new(0x01, "LO", plant.mrn)
    ds.ReferencedImageSequence = Sequence([referenced])
    ds.private_block(0x0029, "PHI PACS", create=True).add_new(0x10, "LO", plant.private_text)
    ds.save_as(path, enforce_file_format=True)


def write_planted_source(folder: Path, plant: Plant, csv_name: str) -> Path:
    """A CSV source whose files and folders are named after the patient; returns the CSV.

    Layout: ``<Family>_<Given>_<birth>/<Family>_<Given>_<birth>_<accession>.dcm`` (L1),
    ``<mrn lower-cased>_followup.dcm`` (L2), a truncated ``<Family>_<birth dashed>.dcm``
    (rejected) and an unlisted ``stray_<mrn lower-cased>.dcm``; every readable file has
    the planted header. A second patient (no PHI) keeps the batch realistic.
    """
    stem = f"{plant.family}_{plant.given}_{plant.birth_date}"
    dashed = f"{plant.birth_date[:4]}-{plant.birth_date[4:6]}-{plant.birth_date[6:]}"
    names = {
        "L1": f"{stem}/{stem}_{plant.accession}.dcm",
        "L2": f"{plant.mrn.lower()}_followup.dcm",
        "L3": f"{plant.family}_{dashed}.dcm",
    }
    rows = []
    for k, (vertebra, name) in enumerate(names.items()):
        path = write_slice(
            folder / name, phantom_hu(*SIZE, BODY, 150.0, k), plant.mrn, instance=k + 1
        )
        plant_header(path, plant)
        rows.append([name, plant.mrn, vertebra, *BOX, -2.7])
    truncated = folder / names["L3"]
    truncated.write_bytes(truncated.read_bytes()[:-3000])
    stray = folder / f"stray_{plant.mrn.lower()}.dcm"
    stray.write_bytes((folder / names["L1"]).read_bytes())
    for k, vertebra in enumerate(("L1", "L2")):
        write_slice(folder / f"other/{vertebra}.dcm", phantom_hu(*SIZE, BODY, 220.0, k), "P-2")
        rows.append([f"other/{vertebra}.dcm", "P-2", vertebra, *BOX, 0.4])
    table = folder / csv_name
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "patient_id", "vertebra", "x1", "y1", "x2", "y2", "t_score"])
        writer.writerows(rows)
    return table
